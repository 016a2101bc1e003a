"""A Triton python-backend model that runs one ONNX file with ONNX Runtime: the local CPU
server's stand-in for Triton's onnxruntime backend, with the same model name and tensors.

Copied by `deploy.triton.write_python_repository` to `<model>/<version>/model.py`, beside a link
to the repository's `model.onnx`. It runs inside tritonserver's python stub (its own virtualenv),
so it imports only numpy, onnxruntime and Triton's utilities.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # the python backend's


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_num_threads", "0"))
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.batched = config.get("max_batch_size", 0) > 0
        self.name = args["model_name"]

    def _run(self, feeds):
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))

    def execute(self, requests):
        arrays = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        results = [None] * len(requests)
        # requests whose inputs agree beyond the batch axis run as one batch (dynamic batching)
        groups: dict = {}
        for i, feeds in enumerate(arrays):
            key = tuple(feeds[n].shape[1:] if self.batched else (i,) for n in self.inputs)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            try:
                if len(members) == 1:
                    outputs = [self._run(arrays[members[0]])]
                else:
                    feeds = {n: np.concatenate([arrays[i][n] for i in members]) for n in self.inputs}
                    merged = self._run(feeds)
                    sizes = np.cumsum([len(arrays[i][self.inputs[0]]) for i in members])[:-1]
                    outputs = [dict(zip(merged, parts, strict=True)) for parts in zip(*(np.split(v, sizes) for v in merged.values()), strict=True)]
                for i, out in zip(members, outputs, strict=True):
                    tensors = [pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in out.items()]
                    results[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            except Exception as exc:  # noqa: BLE001 - the error goes back to the caller, the model stays up
                for i in members:
                    results[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{self.name}: {exc}"))
        return results

    def finalize(self):
        self.session = None
