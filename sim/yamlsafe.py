"""Reading YAML that a user wrote (or that someone else wrote to hurt us), safely.

``yaml.safe_load`` refuses to build arbitrary Python objects, but it is not safe against
everything a spec file can hold:

- bytes that are not UTF-8 text (a binary file, Latin-1, UTF-16) end in a UnicodeDecodeError;
- a document nested thousands deep overflows the Python stack: PyYAML's composer recurses
  once per level (RecursionError);
- an alias bomb ("billion laughs": each list holds nine aliases of the previous one) loads in
  microseconds as shared references and explodes into billions of nodes as soon as anything
  copies or validates it (4 GB and a MemoryError);
- a key given twice in a mapping silently keeps the later value;
- tags (``!!python/object``, ``!foo``) end in a ConstructorError deep inside the loader.

:func:`read_yaml_file` and :func:`parse_yaml` refuse all of these before they can do harm, in
time linear in the size of the text, with a :class:`YamlInputError` that gives the line and
column. The data they return is plain: dicts, lists, strings, numbers, booleans and None,
with no shared sub-trees (aliases are copied, within the bound), so changing one place of it
never changes another.
"""

from __future__ import annotations

import codecs
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "Mark",
    "YamlDocument",
    "YamlInputError",
    "decode_text",
    "parse_yaml",
    "read_yaml_file",
]

MAX_DEPTH = 64
"""The deepest nesting of mappings and lists accepted. A spec needs under ten levels; the
bound keeps PyYAML's recursive composer (a few Python frames per level) far from Python's
recursion limit."""

MAX_ALIAS_NODES = 100_000
"""The most nodes that aliases may add to a document when expanded. Sharing a few blocks
through anchors costs a few thousand; an alias bomb costs billions."""

MAX_FILE_BYTES = 16 * 1024 * 1024
"""The largest file read (16 MiB): a topology of 10,000 services takes a few MiB; what is
bigger is not a spec (``/dev/zero``, a disk image) and would take minutes to parse."""

USE_LIBYAML = True
"""Read events with libyaml when PyYAML has it (the tests turn it off to check the other way).
Either way the composing, and so every guard, is the same Python code."""

Mark = tuple[int, int]
"""A place in the text: (line, column), both counted from 1."""

_CORE = "tag:yaml.org,2002:"
# The tags of plain data. Anything else (``!!python/object``, ``!!binary``, ``!!set``, ``!foo``)
# is not what a spec holds, and is refused by name rather than left to the loader.
_ALLOWED_TAGS = {
    "!",  # the non-specific tag: "a string, whatever it looks like"
    *(_CORE + name for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")),
}


class YamlInputError(ValueError):
    """Text or a file that cannot be read as plain YAML; the message is for the user.

    Attributes:
        what: what is wrong, in a few words (``invalid YAML``, ``not UTF-8 text``).
        problem: the detail.
        line: where (counted from 1), if known.
        column: where on the line (counted from 1), if known.
    """

    def __init__(
        self, what: str, problem: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.what = what
        self.problem = problem
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"{what}{where}: {problem}")


@dataclass(frozen=True)
class YamlDocument:
    """A parsed document and where each of its fields is in the text.

    Attributes:
        data: the plain data (None for an empty document).
        marks: for each path of keys and list indexes (as strings: ``("faults", "0",
            "start")``), the line and column of the key (or of the list item).
    """

    data: Any
    marks: Mapping[tuple[str, ...], Mark] = field(default_factory=dict)


def read_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file, refusing anything that is not a plain YAML text file.

    Args:
        path: The file.

    Returns:
        The parsed document.

    Raises:
        YamlInputError: If the file is missing, a directory, not a regular file, larger than
            :data:`MAX_FILE_BYTES`, not UTF-8 text, or not plain YAML (see :func:`parse_yaml`).
    """
    raw = _read_bytes(Path(path))
    return parse_yaml(decode_text(raw))


def _read_bytes(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise YamlInputError("cannot read the file", "not found (no such file)") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        raise YamlInputError("cannot read the file", _reason(error)) from None
    if stat.S_ISDIR(info.st_mode):
        raise YamlInputError("cannot read the file", "it is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        # A device or a pipe (/dev/zero, /dev/stdin) can be endless: never read one.
        raise YamlInputError("cannot read the file", "it is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise YamlInputError(
            "cannot read the file",
            f"it holds {info.st_size:,} bytes, more than the {MAX_FILE_BYTES:,} a spec may",
        )
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat
    except OSError as error:
        raise YamlInputError("cannot read the file", _reason(error)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise YamlInputError(
            "cannot read the file", f"it holds more than the {MAX_FILE_BYTES:,} bytes a spec may"
        )
    return raw


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


_UTF16_OR_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),  # before UTF-16 LE, whose mark it starts with
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def decode_text(raw: bytes) -> str:
    """Decode a file's bytes as UTF-8 text (a UTF-8 byte-order mark is allowed and dropped).

    Args:
        raw: The bytes.

    Returns:
        The text.

    Raises:
        YamlInputError: If the bytes are UTF-16 or UTF-32, hold a NUL byte (a binary file),
            or are not valid UTF-8 (Latin-1, Windows-1252, random bytes); the message gives
            the line and column.
    """
    save_as = "save the file as UTF-8"
    for bom, name in _UTF16_OR_32_BOMS:
        if raw.startswith(bom):
            raise YamlInputError(
                "not UTF-8 text", f"the file starts with a {name} byte-order mark; {save_as}"
            )
    nul = raw.find(b"\0")
    if nul >= 0:
        line, column = _byte_position(raw, nul)
        # ASCII text in UTF-16 has a NUL byte before or after every character.
        looks_utf16 = raw[:64].count(b"\0") * 3 >= min(len(raw), 64)
        problem = (
            f"every other byte is NUL: UTF-16 text? {save_as}"
            if looks_utf16
            else "a NUL byte: this is a binary file, not YAML text"
        )
        raise YamlInputError("not UTF-8 text", problem, line, column)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line, column = _byte_position(raw, error.start)
        byte = raw[error.start]
        raise YamlInputError(
            "not UTF-8 text",
            f"byte 0x{byte:02x} is not UTF-8 (Latin-1 or Windows-1252 text? a binary file?); "
            f"{save_as}",
            line,
            column,
        ) from None
    return text


# The characters YAML allows (the set PyYAML's reader checks, which it reports without a line).
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _check_printable(text: str) -> None:
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise YamlInputError(
            "not YAML text",
            f"control character U+{ord(bad.group()):04X} is not allowed in YAML",
            line,
            column,
        )


def _byte_position(raw: bytes, offset: int) -> Mark:
    """The line and column (in characters, as well as can be told) of a byte offset."""
    line_start = raw.rfind(b"\n", 0, offset) + 1
    line = raw.count(b"\n", 0, offset) + 1
    column = len(raw[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def parse_yaml(
    text: str, *, max_depth: int = MAX_DEPTH, max_alias_nodes: int = MAX_ALIAS_NODES
) -> YamlDocument:
    """Parse one YAML document into plain data, refusing what could crash or run away.

    Args:
        text: The YAML text.
        max_depth: The deepest nesting of mappings and lists accepted.
        max_alias_nodes: The most nodes that aliases may add when expanded.

    Returns:
        The document: its data (None if the text holds no document) and the place of each
        field.

    Raises:
        YamlInputError: If the text is not valid YAML, holds more than one document, is nested
            deeper than ``max_depth``, has aliases that expand beyond ``max_alias_nodes``
            nodes or that refer to themselves, has a key twice in a mapping, or carries a tag
            other than those of plain data (strings, numbers, booleans, null, lists, mappings);
            the message gives the line and column.
    """
    _check_printable(text)
    loader = _loader(text, max_depth, max_alias_nodes)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None)
        marks = _marks(loader, node)
        data = loader.construct_document(node)
    except YamlInputError:
        raise
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(part for part in (error.context, error.problem) if part) or str(error)
        if mark is not None and "maximum nesting depth" in problem:
            # libyaml's own bound on flow nesting (1000), met while it looks ahead for keys,
            # before the composer sees the level past ours.
            raise YamlInputError(
                "YAML refused",
                f"nested more than {max_depth} levels deep (a spec needs a few)",
                mark.line + 1,
                mark.column + 1,
            ) from None
        if mark is None:
            raise YamlInputError("invalid YAML", problem) from None
        raise YamlInputError("invalid YAML", problem, mark.line + 1, mark.column + 1) from None
    except yaml.YAMLError as error:
        raise YamlInputError("invalid YAML", str(error)) from None
    finally:
        loader.dispose()
    return YamlDocument(_unshared(data), marks)


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


class _PlainResolver(yaml.resolver.Resolver):
    """YAML 1.1's implicit types without timestamps: ``2024-01-01`` stays a string, so the
    data holds nothing JSON cannot (the spec has no date field)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _CORE + "timestamp"]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }


def _libyaml_parser() -> Any:
    """libyaml's parser, which PyYAML's wheels bring (scanner and parser in C), or None."""
    try:
        from yaml._yaml import CParser
    except ImportError:  # pragma: no cover (a PyYAML built without libyaml)
        return None
    return CParser


_CParser: Any = _libyaml_parser()


class _Guards(yaml.composer.Composer, yaml.constructor.SafeConstructor, _PlainResolver):
    """PyYAML's composer and safe constructor, with the depth, aliases, keys and tags checked
    while composing. A parser (PyYAML's, or libyaml's through ``CParser``) supplies the events.

    Only the composer recurses, once per level, so bounding the depth there is enough. The
    depth and the size count aliases as what they stand for: an alias of a deep block, placed
    deep, makes the data as deep as both together.
    """

    # Supplied by the parser (PyYAML's Parser or libyaml's CParser).
    peek_event: Callable[[], Any]
    dispose: Callable[[], None]

    def _guard(self, max_depth: int, max_alias_nodes: int) -> None:
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        _PlainResolver.__init__(self)
        self._max_depth = max_depth
        self._max_alias_nodes = max_alias_nodes
        self._depth = 0
        self._alias_nodes = 0
        # Per node composed so far, by id: its size (nodes, aliases expanded) and its height
        # (levels of nesting below it). The nodes live as long as the loader, so ids stay theirs.
        self._sizes: dict[int, int] = {}
        self._heights: dict[int, int] = {}

    def get_single_node(self) -> Node | None:
        # The composer here, not libyaml's (CParser has its own, recursive and unguarded).
        return yaml.composer.Composer.get_single_node(self)

    def _refuse(self, problem: str, mark: yaml.Mark) -> YamlInputError:
        return YamlInputError("YAML refused", problem, mark.line + 1, mark.column + 1)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        start = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # else the composer reports the undefined alias
                self._count_alias(str(event.anchor), target, start)
            return self._compose(parent, index)
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _ALLOWED_TAGS:
            raise self._refuse(
                f"tag {_tag_name(tag)} is not allowed: a spec holds plain data (strings, "
                "numbers, booleans, null, lists and mappings)",
                start,
            )
        nests = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if nests:
            self._depth += 1
            if self._depth > self._max_depth:
                raise self._refuse(
                    f"nested more than {self._max_depth} levels deep (a spec needs a few)", start
                )
        try:
            node = self._compose(parent, index)
        finally:
            if nests:
                self._depth -= 1
        if isinstance(node, MappingNode):
            self._check_keys(node)
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, SequenceNode):
            children = node.value
        else:
            children = []
        self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in children)
        self._heights[id(node)] = (
            1 + max((self._heights[id(child)] for child in children), default=0) if nests else 0
        )
        return node

    def _compose(self, parent: Node | None, index: Any) -> Node:
        node = yaml.composer.Composer.compose_node(self, parent, index)
        assert node is not None  # compose_node is called only where a node starts
        return node

    def _count_alias(self, anchor: str, target: Node, start: yaml.Mark) -> None:
        size = self._sizes.get(id(target))
        if size is None:
            raise self._refuse(
                f"alias *{anchor} refers to a node that contains it (a recursive alias: "
                "endless once expanded)",
                start,
            )
        if self._depth + self._heights[id(target)] > self._max_depth:
            raise self._refuse(
                f"alias *{anchor} nests the data more than {self._max_depth} levels deep "
                "(a spec needs a few)",
                start,
            )
        self._alias_nodes += size
        if self._alias_nodes > self._max_alias_nodes:
            raise self._refuse(
                f"aliases expand to more than {self._max_alias_nodes:,} nodes (an alias "
                "bomb?); write the repeated parts out, or share fewer of them",
                start,
            )

    def _check_keys(self, node: MappingNode) -> None:
        """Refuse a key given twice (YAML forbids it; PyYAML keeps the later silently)."""
        seen: dict[Any, Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _CORE + "merge":
                continue  # a merge (<<) may bring a key back: the mapping's own one wins
            key = self.construct_object(key_node)
            mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            try:
                first = seen.setdefault(key, mark)
            except TypeError:  # unhashable: the constructor says so, with its place
                continue
            if first != mark:
                raise YamlInputError(
                    "invalid YAML",
                    f"duplicate key {key!r} (first at line {first[0]}, column {first[1]}); a "
                    "key may appear once in a mapping",
                    *mark,
                )

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """PyYAML's, with the place of a scalar its constructor cannot read (``!!int abc``,
        an integer of more digits than Python converts) instead of a bare ValueError."""
        try:
            return yaml.constructor.SafeConstructor.construct_object(self, node, deep)
        except (YamlInputError, yaml.YAMLError):
            raise
        except (ValueError, LookupError, TypeError, ArithmeticError) as error:
            text = node.value if isinstance(node, ScalarNode) else type(node).__name__
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise YamlInputError(
                "invalid YAML",
                f"cannot read {shown!r} as {_tag_name(node.tag)} ({error})"[:300],
                node.start_mark.line + 1,
                node.start_mark.column + 1,
            ) from None


class _PyLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _Guards):
    """The guards over PyYAML's own scanner and parser (pure Python: slower, always there).

    They keep their state in lists, not on the stack, but the scanner looks up to 1024
    characters ahead for a possible key at each ``[`` or ``{``, over every open one: 10,000
    of them cost half a second before the composer sees the first, so flow nesting is
    bounded here too.
    """

    def __init__(self, text: str, *, max_depth: int, max_alias_nodes: int) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        self._guard(max_depth, max_alias_nodes)

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 (PyYAML's)
        """PyYAML's, refusing flow nesting (``[[[...``) beyond the bound while scanning.

        The open block collections (one indentation each, at most) and flow ones count: never
        more than the composer will count, so this refuses only what it would refuse.
        """
        if len(self.indents) + self.flow_level >= self._max_depth:
            raise self._refuse(
                f"nested more than {self._max_depth} levels deep (a spec needs a few)",
                self.get_mark(),
            )
        super().fetch_flow_collection_start(TokenClass)


if _CParser is not None:

    class _CLoader(_Guards, _CParser):  # type: ignore[misc]
        """The guards over libyaml's scanner and parser (C: three to four times faster on a
        large file). libyaml bounds flow nesting itself (at 1000), in C, in no time."""

        def __init__(self, text: str, *, max_depth: int, max_alias_nodes: int) -> None:
            _CParser.__init__(self, text)
            self._guard(max_depth, max_alias_nodes)

        def dispose(self) -> None:
            _CParser.dispose(self)


def _loader(text: str, max_depth: int, max_alias_nodes: int) -> _Guards:
    if _CParser is not None and USE_LIBYAML:
        return _CLoader(text, max_depth=max_depth, max_alias_nodes=max_alias_nodes)
    return _PyLoader(text, max_depth=max_depth, max_alias_nodes=max_alias_nodes)


def _marks(loader: _Guards, root: Node) -> dict[tuple[str, ...], Mark]:
    """Where each field of the document is: its key's place, or a list item's own."""
    marks: dict[tuple[str, ...], Mark] = {}
    stack: list[tuple[tuple[str, ...], Node]] = [((), root)]
    while stack:  # an alias is walked once per use: bounded by max_alias_nodes
        path, node = stack.pop()
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _CORE + "merge":
                    continue
                child = (*path, str(loader.construct_object(key_node)))
                marks.setdefault(child, _place(key_node))
                stack.append((child, value_node))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                child = (*path, str(i))
                marks.setdefault(child, _place(item))
                stack.append((child, item))
    return marks


def _place(node: Node) -> Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _unshared(data: Any) -> Any:
    """A copy in which no list or mapping appears twice (aliases give shared objects)."""
    if isinstance(data, dict):
        return {key: _unshared(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_unshared(item) for item in data]
    return data
