"""A minimal backupgw client in Python: every backup of some regions, and the failed targets.

    pip install grpcio grpcio-tools
    python -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. \
        proto/backupgw/v1/backupgw.proto
    python examples/list_backups.py 127.0.0.1:50051 cn-north-4

Set BACKUPGW_API_KEY when the gateway has [[callers]].
"""
import os
import sys

import grpc
from backupgw.v1 import backupgw_pb2, backupgw_pb2_grpc


def main() -> None:
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    regions = sys.argv[2:]
    metadata = []
    key = os.environ.get("BACKUPGW_API_KEY")
    if key:
        metadata.append(("authorization", f"Bearer {key}"))
    with grpc.insecure_channel(addr) as channel:
        gateway = backupgw_pb2_grpc.BackupGatewayStub(channel)
        request = backupgw_pb2.ListBackupsRequest(regions=regions)
        for message in gateway.ListBackups(request, timeout=60, metadata=metadata):
            for b in message.backups:
                created = b.created.ToJsonString() if b.HasField("created") else ""
                print(f"{b.region}\t{b.instance_name}\t{b.name}\t{b.status}\t{created}")
            for t in message.targets:
                if not t.ok:
                    print(f"failed: {t.project_id} ({t.region}): {t.error.kind} {t.error.message}",
                          file=sys.stderr)
            if message.HasField("summary"):
                s = message.summary
                print(f"{s.backups} backups; {s.targets_ok} targets ok, {s.targets_failed} failed",
                      file=sys.stderr)


if __name__ == "__main__":
    main()
