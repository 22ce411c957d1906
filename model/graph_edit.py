"""In-place edits of an ONNX graph shared by the int8 rewrites."""

from __future__ import annotations

import onnx


def replace_node(graph: onnx.GraphProto, node: onnx.NodeProto, replacement: list[onnx.NodeProto]) -> None:
    """Put the replacement nodes where node was, in order (keeps the graph topologically sorted)."""
    position = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new_node in enumerate(replacement):
        graph.node.insert(position + offset, new_node)
