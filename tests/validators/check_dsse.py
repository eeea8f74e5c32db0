"""Checks a DSSE envelope's signature with securesystemslib.

Usage: check_dsse.py ENVELOPE PUBKEY_LINE

PUBKEY_LINE is an OpenSSH ed25519 public key line; its raw key is taken
out of it (the last 32 bytes of the wire blob) for securesystemslib's
ed25519 verifier. Exits 0 if a signature verifies; raises otherwise.
"""

import base64
import json
import sys

from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main(envelope_path, pub_line):
    blob = base64.b64decode(pub_line.split()[1])
    raw = blob[-32:]
    with open(envelope_path, encoding="utf-8") as f:
        env = Envelope.from_dict(json.load(f))
    keyid = env.signatures and next(iter(env.signatures))
    key = SSlibKey(keyid, "ed25519", "ed25519", {"public": raw.hex()})
    verified = env.verify([key], 1)
    print(f"verified by {', '.join(verified)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
