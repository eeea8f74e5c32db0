"""Checks a provenance file as in-toto's own library reads one.

Usage: check_provenance.py FILE

FILE is an in-toto Statement, or a DSSE envelope holding one. The
statement is parsed into in-toto's Statement protobuf and validated
(type, subjects with digests, predicate type), and the predicate is parsed
strictly (an unknown field fails) into the SLSA Provenance v1 protobuf,
each of its resource descriptors validated. Prints each subject as
"sha256 name" and exits 0; any failure raises (exit 1).
"""

import base64
import json
import sys

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement

SLSA_V1 = "https://slsa.dev/provenance/v1"


def main(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if "payloadType" in doc:
        if doc["payloadType"] != "application/vnd.in-toto+json":
            raise SystemExit(f"payloadType is {doc['payloadType']!r}")
        doc = json.loads(base64.b64decode(doc["payload"]))
    pb = json_format.ParseDict(doc, statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    if pb.predicate_type != SLSA_V1:
        raise SystemExit(f"predicateType is {pb.predicate_type!r}, not {SLSA_V1!r}")
    prov = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    if not prov.build_definition.build_type:
        raise SystemExit("buildDefinition.buildType is missing")
    if not prov.run_details.builder.id:
        raise SystemExit("runDetails.builder.id is missing")
    for rd in list(prov.build_definition.resolved_dependencies) + list(
        prov.run_details.byproducts
    ) + list(prov.run_details.builder.builder_dependencies):
        ResourceDescriptor.copy_from_pb(rd).validate()
    for s in pb.subject:
        print(s.digest["sha256"], s.name)


if __name__ == "__main__":
    main(sys.argv[1])
