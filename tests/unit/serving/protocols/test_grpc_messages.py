"""The gRPC messages the proxy builds from the protocol's descriptor are the ones Triton's client speaks."""

from tritonclient.grpc import service_pb2

from serving.protocols.grpc import messages


def test_an_infer_request_written_by_triton_reads_back_in_ours_and_ours_in_tritons_in_one_process():
    theirs = service_pb2.ModelInferRequest(model_name="wine", model_version="2", id="r1")
    tensor = theirs.inputs.add(name="alcohol", datatype="FP64", shape=[2, 1])
    tensor.contents.fp64_contents.extend([13.2, 12.4])
    theirs.raw_input_contents.append(b"\x00" * 8)
    ours = messages.ModelInferRequest.FromString(theirs.SerializeToString())
    assert (ours.model_name, ours.model_version, ours.id) == ("wine", "2", "r1")
    assert list(ours.inputs[0].contents.fp64_contents) == [13.2, 12.4] and ours.raw_input_contents == [b"\x00" * 8]
    assert service_pb2.ModelInferRequest.FromString(ours.SerializeToString()) == theirs
