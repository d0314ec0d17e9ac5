"""Generated protobuf messages of the SPIFFE Workload API (see workload.proto here).

workload_pb2.py and workload_pb2.pyi are generated, never edited: grpcio-tools 1.75.1
(libprotoc 31.1), protobuf gencode 6.31.1, so they load on any protobuf runtime from
6.31.1 (the oldest py-spiffe accepts) to 7.x. Regenerate from the repository root with
that grpcio-tools:

    python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src \\
        src/tether/spiffe/_proto/workload.proto

then put back the two-line "# Tether:" comment under the generated header of
workload_pb2.py.
"""
