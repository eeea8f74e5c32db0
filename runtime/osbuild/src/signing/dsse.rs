//! DSSE envelopes (Dead Simple Signing Envelope, what in-toto attestations
//! travel in): the payload, its type, and ed25519 signatures over the
//! pre-authentication encoding of both.

use base64ct::Encoding as _;
use serde::{Deserialize, Serialize};

use super::keys::{SigningKey, VerifyingKey};

/// The payload type of an in-toto Statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload.
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signing key's fingerprint (`SHA256:…`).
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the signature.
    pub sig: String,
}

/// The bytes signed: DSSE's pre-authentication encoding, so that neither
/// the type nor the payload can be changed without the signature failing.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    m.extend_from_slice(payload);
    m
}

/// Wraps `payload` in an envelope signed by `key`.
pub fn seal(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
    Envelope {
        payload: base64ct::Base64::encode_string(payload),
        payload_type: payload_type.to_string(),
        signatures: vec![EnvelopeSignature {
            keyid: key.public().fingerprint(),
            sig: base64ct::Base64::encode_string(&key.sign(&pae(payload_type, payload))),
        }],
    }
}

/// The payload of `envelope`, if `key` signed it with the payload type
/// `want_type`; else why not.
pub fn open(envelope: &Envelope, want_type: &str, key: &VerifyingKey) -> Result<Vec<u8>, String> {
    if envelope.payload_type != want_type {
        return Err(format!(
            "the envelope's payloadType is {:?}, not {want_type:?}",
            envelope.payload_type
        ));
    }
    let payload = decode(&envelope.payload).ok_or("its payload is not base64")?;
    if envelope.signatures.is_empty() {
        return Err("the envelope has no signature".to_string());
    }
    let message = pae(&envelope.payload_type, &payload);
    let good = envelope
        .signatures
        .iter()
        .any(|s| decode(&s.sig).is_some_and(|sig| key.verify(&message, &sig)));
    if good {
        Ok(payload)
    } else {
        Err(format!(
            "no signature in the envelope is {}'s over its payload (the payload or the signature was changed, or another key signed it)",
            key.describe()
        ))
    }
}

/// Base64, standard or URL-safe, as DSSE allows either.
fn decode(s: &str) -> Option<Vec<u8>> {
    base64ct::Base64::decode_vec(s)
        .or_else(|_| base64ct::Base64Url::decode_vec(s))
        .or_else(|_| base64ct::Base64Unpadded::decode_vec(s))
        .or_else(|_| base64ct::Base64UrlUnpadded::decode_vec(s))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pre_authentication_encoding_is_the_specifications() {
        // The example in the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
