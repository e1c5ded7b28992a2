"""Run by the Python of KServe's own venv (tests/.peers/kserve): inferences with its InferenceRESTClient.

Reads one job a line, {"url", "model", "id", "binary", "inputs": [{"name", "shape", "datatype", "data"}]},
until stdin closes; answers each with a line {"status": 200, "id", "model_name", "outputs": {name: values}}
or {"status", "message"} for the HTTP error the SDK raised.
"""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


def infer_input(tensor, binary):
    if tensor["datatype"] == "BYTES":
        data = np.array(tensor["data"], dtype=np.object_)
    else:  # a DataFrame's number column: NaN where a value is missing
        data = np.array([np.nan if value is None else value for value in tensor["data"]], dtype=np.float64)
    data = data.reshape(tensor["shape"])
    infer_input = InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
    if binary:
        infer_input.set_data_from_numpy(data)  # the SDK's default
    else:
        infer_input.set_data_from_numpy(data, binary_data=False)
    return infer_input


def text(values):
    return [value.decode() if isinstance(value, bytes) else value for value in values]


async def main(job):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
    inputs = [infer_input(tensor, job["binary"]) for tensor in job["inputs"]]
    request = InferRequest(model_name=job["model"], infer_inputs=inputs, request_id=job["id"])
    try:
        response = await client.infer(job["url"], request, model_name=job["model"])
    except httpx.HTTPStatusError as error:
        return {"status": error.response.status_code, "message": str(error)}
    finally:
        await client.close()
    outputs = {output.name: text(output.as_numpy().tolist()) for output in response.outputs}
    return {"status": 200, "id": response.id, "model_name": response.model_name, "outputs": outputs}


if __name__ == "__main__":
    for line in sys.stdin:
        print(json.dumps(asyncio.run(main(json.loads(line)))), flush=True)
