"""CPU inference: each convolution fused with the ReLU / GELU or residual addition after it
into one oneDNN call.

After `fold_batchnorm`, eager PyTorch still runs a ReLU and a residual addition as separate
passes over every activation map (torch.profiler of `evaluate`, resnet_reference in bf16 on the
10,000 test images: 5% of the time, against 93% in the convolutions themselves). oneDNN
applies them as post-ops of the convolution while its output is still in registers: a ReLU as
an element-wise post-op; an addition as a "sum" post-op that accumulates the convolution into
the residual tensor in place, so the sum is also rounded to bf16 once instead of twice. These
are the fused kernels (`torch.ops.mkldnn._convolution_pointwise`) that Inductor emits, called
from eager mode with no compile time.

The graph comes from `fold_batchnorm` (a torch.fx GraphModule). An addition is fused only when
its residual operand is a tensor the graph made itself and that nothing reads afterwards, since
the fused call overwrites it. `fuse_convolutions` checks the fused graph against the original
on a random batch and returns the original when the two disagree.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

# the element-wise post-ops oneDNN takes from PyTorch: module type / function -> (attr, algorithm)
_UNARY_MODULES: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.GELU: "gelu"}
_UNARY_FUNCTIONS = {F.relu: "relu", torch.relu: "relu"}
_ADDITIONS = (operator.add, torch.add)
# modules that return their input tensor itself in eval mode (the residual may be such a view)
_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)


def onednn_fusion_available() -> bool:
    """True when this PyTorch build has oneDNN and its fused convolution ops."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return hasattr(torch.ops.mkldnn._convolution_pointwise_, "binary")
    except (AttributeError, RuntimeError):  # builds without the op raise either
        return False


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.detach().clone(), requires_grad=False)


class FusedConv2d(nn.Module):
    """Conv2d (zero padding) followed by an optional element-wise op, one oneDNN call. Runs in
    its weight's dtype (see `cast_`), whatever the input's."""

    def __init__(self, conv: nn.Conv2d, unary: str = "none", algorithm: str | None = None) -> None:
        super().__init__()
        self.weight = _frozen(conv.weight)
        self.bias = None if conv.bias is None else _frozen(conv.bias)
        self.padding = [int(p) for p in conv.padding]
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.unary = unary
        self.algorithm = algorithm

    def cast_(self, dtype: torch.dtype) -> None:
        self.weight.data = self.weight.data.to(dtype)
        if self.bias is not None:
            self.bias.data = self.bias.data.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(self.weight.dtype), self.weight, self.bias, self.padding, self.stride,
            self.dilation, self.groups, self.unary, [], self.algorithm,
        )  # fmt: skip


class FusedConv2dAdd(FusedConv2d):
    """`residual + conv(x)` (then an optional ReLU), accumulated into `residual`'s
    memory: the caller must not need `residual` afterwards. Returns that tensor."""

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__(conv, "relu" if relu else "none")  # oneDNN takes no other op after a sum

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        dtype = self.weight.dtype
        if residual.dtype != dtype:  # a converted copy: the caller's tensor stays untouched
            residual = residual.to(dtype)
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            residual, x.to(dtype), self.weight, self.bias, self.padding, self.stride,
            self.dilation, self.groups, "add", 1.0,
            None if self.unary == "none" else self.unary, [], None,  # the binary op's "no op"
        )  # fmt: skip


def fuse_convolutions(
    model: torch.fx.GraphModule, dtype: torch.dtype, example: torch.Tensor
) -> nn.Module:
    """A copy of `model` (eval mode, CPU) with its convolutions fused as the module docstring
    says, computing in `dtype` (torch.float32 or torch.bfloat16); `model` itself when nothing
    fuses, oneDNN lacks the ops, the fused copy does not match `model` in fp32 on `example` (a
    float input batch as the model will get it, e.g. 2 random images), or fails to run under
    CPU autocast to `dtype`."""
    if not (onednn_fusion_available() and isinstance(model, torch.fx.GraphModule)):
        return model
    fused = copy.deepcopy(model).eval()
    if not _fuse(fused):
        return model
    # any failure means the unfused model, which is only slower (e.g. an addition that
    # broadcasts, which the fused op cannot do, or a build without these kernels in bf16)
    try:
        with torch.no_grad():
            expected = model(example.clone()).float()
            got = fused(example.clone()).float()
            scale = expected.abs().max().clamp_min(1.0)
            if got.shape != expected.shape or not (got - expected).abs().max() <= 1e-4 * scale:
                return model
            for module in fused.modules():
                if isinstance(module, FusedConv2d):
                    module.cast_(dtype)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                fused(example.clone())  # as inference runs it: autocast for the other layers
    except (RuntimeError, TypeError, ValueError):
        return model
    return fused


def _fuse(gm: torch.fx.GraphModule) -> bool:
    """Rewrite gm's graph in place; True when at least one convolution was replaced."""
    graph = gm.graph
    modules = dict(gm.named_modules())  # the original modules, kept while they are replaced
    changed = False
    for node in list(graph.nodes):
        conv = modules.get(node.target) if node.op == "call_module" else None
        if not (
            type(conv) is nn.Conv2d
            and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            and len(node.args) == 1
            and not node.kwargs
        ):
            continue
        parent, _, name = str(node.target).rpartition(".")
        add, residual = _addition_after(node, modules)
        if add is not None:
            last, (unary, _) = _unary_after(add, modules)
            if unary not in ("none", "relu"):
                last = add
            fused: FusedConv2d = FusedConv2dAdd(conv, relu=last is not add)
            with graph.inserting_before(add):
                replacement = graph.call_module(str(node.target), (node.args[0], residual))
            last.replace_all_uses_with(replacement)
            if last is not add:
                graph.erase_node(last)
            graph.erase_node(add)
            graph.erase_node(node)
        else:
            last, unary = _unary_after(node, modules)
            fused = FusedConv2d(conv, *unary)
            if last is not node:
                last.replace_all_uses_with(node)
                graph.erase_node(last)
        setattr(gm.get_submodule(parent), name, fused)
        changed = True
    if changed:
        graph.lint()
        gm.recompile()
    return changed


def _unary_after(
    node: torch.fx.Node, modules: dict[str, nn.Module]
) -> tuple[torch.fx.Node, tuple[str, str | None]]:
    """(the last node of node -> [ReLU | GELU], (oneDNN attr, algorithm)); `node` itself and
    ("none", None) when nothing fuses."""
    if len(node.users) != 1:
        return node, ("none", None)
    (user,) = node.users
    if user.args[:1] != (node,) or len(user.args) != 1:
        return node, ("none", None)
    if user.op == "call_module":
        module = modules.get(str(user.target))
        attr = _UNARY_MODULES.get(type(module)) if module is not None else None
        if attr == "gelu":
            return user, ("gelu", module.approximate)  # type: ignore[union-attr]
        if attr is not None:
            return user, (attr, None)
    if user.op == "call_function" and user.target in _UNARY_FUNCTIONS and not user.kwargs:
        return user, (_UNARY_FUNCTIONS[user.target], None)
    return node, ("none", None)


def _addition_after(
    node: torch.fx.Node, modules: dict[str, nn.Module]
) -> tuple[torch.fx.Node | None, torch.fx.Node | None]:
    """(add, residual) when node's only user is `node + residual` (either order) and the
    residual's memory may be overwritten there; (None, None) otherwise."""
    if len(node.users) != 1:
        return None, None
    (add,) = node.users
    if (
        not (add.op == "call_function" and add.target in _ADDITIONS and len(add.args) == 2)
        or add.kwargs
    ):
        return None, None
    residual = add.args[1] if add.args[0] is node else add.args[0]
    if not isinstance(residual, torch.fx.Node) or residual is node:
        return None, None
    return (add, residual) if _free_after(residual, add, modules) else (None, None)


def _free_after(
    residual: torch.fx.Node,
    add: torch.fx.Node,
    modules: dict[str, nn.Module],
) -> bool:
    """True when `residual` is memory the graph allocated (a convolution's or an addition's
    output, possibly through pass-through modules) and nothing reads it after `add`."""
    chain = [residual]
    while chain[-1].op == "call_module" and isinstance(
        modules.get(str(chain[-1].target)), _PASS_THROUGH
    ):
        source = chain[-1].args[0] if chain[-1].args else None
        if not isinstance(source, torch.fx.Node):
            return False
        chain.append(source)
    root = chain[-1]
    fresh = (root.op == "call_module" and isinstance(modules.get(str(root.target)), nn.Conv2d)) or (
        root.op == "call_function" and root.target in _ADDITIONS
    )
    if not fresh:
        return False
    readers = {user for link in chain for user in link.users} - set(chain) - {add}
    order = {n: i for i, n in enumerate(add.graph.nodes)}  # the graph as rewritten so far
    return all(order[reader] < order[add] for reader in readers)
