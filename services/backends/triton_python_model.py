"""A Triton python-backend model that runs one ONNX file with ONNX Runtime: the local CPU
server's stand-in for Triton's onnxruntime backend, with the same model name and tensors.

Copied by `deploy.triton.write_python_repository` to `<model>/<version>/model.py`, beside a link
to the repository's `model.onnx`, `facet_padding.py` and `facet_onnx_session.py` (Facet's one
session factory). It runs inside tritonserver's python stub (its own virtualenv), so it imports
only numpy, onnxruntime, those two files and Triton's utilities.
"""

import json
import os

import triton_python_backend_utils as pb_utils  # the python backend's
from facet_onnx_session import create_session  # services/backends/onnx_session.py, copied beside this file
from facet_padding import run_together  # services/backends/padding.py, copied beside this file


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = create_session(
            path,
            providers=params.get("providers", "auto"),
            intra_op_num_threads=int(params.get("intra_op_num_threads", "0")),
            inter_op_num_threads=1,
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.batched = config.get("max_batch_size", 0) > 0
        self.name = args["model_name"]

    def execute(self, requests):
        arrays = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        def run(feeds):
            return self.session.run(self.outputs, feeds)

        if self.batched:  # what Triton's dynamic batcher gathered runs together, padded as Facet's batcher does
            outcomes = run_together(run, self.outputs, arrays)
        else:
            outcomes = [outcome for a in arrays for outcome in run_together(run, self.outputs, [a])]
        responses = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):  # the caller gets the error; the model stays up
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{self.name}: {outcome}")))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outcome.items()]))
        return responses

    def finalize(self):
        self.session = None
