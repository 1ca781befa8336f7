"""The Open Inference Protocol's gRPC messages, built from its published descriptor in a pool of their own.

``serving.protocols.grpc.descriptor`` is the protocol's compiled ``.proto`` (``generate.sh`` makes it
from the file KServe publishes). The classes are built here in a private descriptor pool:
Triton's client registers messages of the same ``inference`` package in protobuf's default
pool, and a process may well import both. The wire format is what the two share.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from serving.protocols.grpc.descriptor import FILE_DESCRIPTOR_SET

SERVICE = "inference.GRPCInferenceService"

_pool = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET).file:
    _pool.Add(_file)


def _message(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
InferTensorContents = _message("InferTensorContents")
