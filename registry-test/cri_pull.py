#!/usr/bin/env python3
"""Calls CRI ImageService.PullImage on a containerd socket, the call kubelet makes to pull a pod's image.

usage: cri_pull.py SOCKET IMAGE   prints the image ref containerd returns, then its repo digests
Needs grpcio and grpcio-tools (PyPI); compiles registry-test/cri.proto on the fly.
"""
import importlib, os, sys, tempfile

def main():
    sock, image = sys.argv[1], sys.argv[2]
    from grpc_tools import protoc
    import grpc
    here = os.path.dirname(os.path.abspath(__file__))
    out = tempfile.mkdtemp()
    rc = protoc.main(["protoc", f"-I{here}", f"--python_out={out}", f"--grpc_python_out={out}", os.path.join(here, "cri.proto")])
    if rc != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    pb = importlib.import_module("cri_pb2")
    rpc = importlib.import_module("cri_pb2_grpc")
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        stub = rpc.ImageServiceStub(channel)
        resp = stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=300)
        print(resp.image_ref)
        status = stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image)), timeout=60)
        for d in status.image.repo_digests:
            print(d)

if __name__ == "__main__":
    main()
