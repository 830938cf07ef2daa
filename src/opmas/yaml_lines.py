"""Line numbers for YAML files validated with msgspec: where in the file an error points.

Parser files and rule packs are YAML read twice: as data (validated by msgspec) and as a node
tree (yaml.compose) that knows the line of every key, so each error names its file and line.
"""

from __future__ import annotations

import re

import yaml

Where = list[str | int]
"""A path into a YAML document: mapping keys and sequence indexes."""

_ERROR_PATH = re.compile(r"at `\$([^`]*)`")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def error_path(message: str) -> Where:
    """The document path a msgspec validation message points at (`... at `$.rules[3].name``)."""
    match = _ERROR_PATH.search(message)
    parts: Where = []
    if match is not None:
        for name, index in _PATH_PART.findall(match.group(1)):
            parts.append(int(index) if index else name)
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown is not None:
        parts.append(unknown.group(1))
    return parts


def node_line(node: yaml.Node, where: Where) -> int:
    """1-based line of the YAML node at `where`, or of its nearest existing parent."""
    for part in where:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is None:
                child = next((k for k, _ in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1
