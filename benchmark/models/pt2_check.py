"""Check a ``torch.export`` archive (``.pt2``) before torch loads it.

``torch.export.load`` (torch 2.13) is not a safe loader. Read from torch's own source
(``torch/export/__init__.py``, ``torch/export/pt2_archive/_package.py``,
``torch/_export/serde/serialize.py``, ``torch/export/_unlift.py``, ``torch/utils/_pytree.py``),
these parts of an archive run code from the file:

1. a weight in ``data/weights/<model>_weights_config.json`` marked ``"use_pickle": true``:
   ``torch.load(weights_only=False)``;
2. a tensor constant in ``data/constants/<model>_constants_config.json`` marked ``use_pickle``:
   the same; a ``custom_obj_*`` constant: ``torch._C._pickle_load_obj`` (TorchScript-class
   unpickler); an ``opaque_obj_*`` constant: ``pickle.loads``;
3. ``data/sample_inputs/<model>.pt``, legacy ``data/weights/<model>.pt`` /
   ``data/constants/<model>.pt``, and the pre-2.7 layout's ``serialized_*.pt`` members: loaded with
   ``weights_only=True`` and, when that fails, **again with ``weights_only=False``**;
4. AOTInductor packages under ``data/aotinductor/``: a compiled shared library that torch loads;
5. symbolic-shape expressions (``expr_str`` in the graph): parsed by ``sympy.sympify``, which
   evaluates its text as Python;
6. ``guards_code``: Python source that ``ExportedProgram.module()`` compiles with ``exec`` and
   runs on every forward call;
7. pytree specs (``in_spec``/``out_spec``): a ``defaultdict`` context names a module to import and
   a factory to call, an ``__enum__`` context a module to import.

:func:`check_exported_archive` reads the archive with the same zip reader torch uses (and with
``zipfile`` for the pre-2.7 members), without unpickling anything, and refuses every one of these
unless the user trusts the file: pickled payloads, custom/opaque objects, compiled code, sample
inputs or legacy members that do not load with ``weights_only=True``, expressions and guards that
are not plain shape arithmetic (an allow-list of names and syntax), and pytree contexts that import
modules. Independently of trust, every raw tensor record must hold the bytes its declared shape,
strides and offset need (torch allocates a declared shape over an empty record), and duplicate
member names are refused (two zip readers could pick different copies).
"""
from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from typing import Any, BinaryIO, Iterator

from ..errors import TRUST_OPT_IN, ModelLoadError, UnsafeModelError

WEIGHTS_CONFIG = "data/weights/{}_weights_config.json"
CONSTANTS_CONFIG = "data/constants/{}_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/{}.pt"
LEGACY_WEIGHTS = "data/weights/{}.pt"
LEGACY_CONSTANTS = "data/constants/{}.pt"
AOTI_DIR = "data/aotinductor/"
#: Members of the pre-2.7 layout that torch passes through ``weights_only=True`` then ``False``.
LEGACY_PICKLED = ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt",
                  "serialized_state_dict.json", "serialized_constants.json")
LEGACY_PROGRAM = "serialized_exported_program.json"

#: Names a symbolic expression may use (sympy's and torch's shape functions), besides symbols.
SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
    "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
    "And", "Or", "Not", "Xor", "Piecewise", "ITE", "floor", "ceiling", "Abs", "sqrt", "Pow", "Mul",
    "Add", "oo", "zoo", "nan", "true", "false", "True", "False",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal",
    "ToFloat", "Identity",
})
SYMBOL = re.compile(r"[a-z]{1,8}[0-9]+")
SYMBOL_ASSUMPTIONS = frozenset({"positive", "negative", "nonnegative", "nonpositive", "integer", "real",
                                "finite", "commutative"})
#: What a guard may call: tensor shape methods, torch's symbolic helpers, math rounding.
GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
GUARD_ATTRS = {"math": frozenset({"floor", "ceil", "trunc", "sqrt"}),
               "torch": frozenset({"sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_ite", "sym_sqrt",
                                   "sym_sum"})}
GUARD_FUNCTIONS = frozenset({"IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"})
DEFAULTDICT_FACTORIES = frozenset({"list", "dict", "int", "float", "set", "tuple", "str", "bool"})
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.Load)
MAX_REASONS = 3


def check_exported_archive(fh: BinaryIO, name: str, trust_pickle: bool) -> list[str]:
    """Check the archive open in ``fh`` (seekable, at any position); returns notes for the model.

    Raises :class:`UnsafeModelError` (one line: what would run and how to opt in) unless
    ``trust_pickle``, and :class:`ModelLoadError` for an archive whose records cannot hold what they
    declare. Nothing is unpickled: sample inputs and legacy members are tried with
    ``weights_only=True`` only.
    """
    reasons: list[str] = []
    notes: list[str] = []
    _check_zip_names(fh, name)
    reader, records = _torch_reader(fh)
    if any(r.startswith(AOTI_DIR) for r in records):
        reasons.append("it holds AOTInductor compiled code (a shared library torch loads and runs)")
    for model in sorted(r[len("models/"):-len(".json")] for r in records
                        if r.startswith("models/") and r.endswith(".json")):
        reasons += _check_program(_read_json(reader, f"models/{model}.json", name), f"program {model!r}")
        reasons += _check_payloads(reader, name, model)
        for member in (SAMPLE_INPUTS, LEGACY_WEIGHTS, LEGACY_CONSTANTS):
            member = member.format(model)
            if member in records and not _loads_weights_only(reader.get_record(member)):
                reasons.append(f"{member} needs full unpickling (it does not load with weights_only=True)")
    reasons += _check_legacy(fh, name)
    if reasons and not trust_pickle:
        shown = "; ".join(dict.fromkeys(reasons[:MAX_REASONS]))
        more = f" (and {len(reasons) - MAX_REASONS} more)" if len(reasons) > MAX_REASONS else ""
        raise UnsafeModelError(f"{name}: loading this torch.export archive would run code from the file: "
                               f"{shown}{more}; it was refused. {TRUST_OPT_IN}")
    if reasons:
        notes.append(f"loaded although it runs code from the file ({reasons[0]}) because it was marked trusted")
    fh.seek(0)
    return notes


# --------------------------------------------------------------------------------------------
# archive structure
# --------------------------------------------------------------------------------------------
def _check_zip_names(fh: BinaryIO, name: str) -> None:
    fh.seek(0)
    try:
        with zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{name}: the .pt2 file is a damaged zip archive ({exc})") from None
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ModelLoadError(f"{name}: the archive holds member {n!r} twice; refusing an ambiguous archive")
        seen.add(n)


def _torch_reader(fh: BinaryIO) -> tuple[Any, set[str]]:
    """torch's own zip reader over ``fh`` and its record names; ``(None, set())`` when torch cannot
    read the archive that way (then ``torch.export.load`` falls back to the pre-2.7 layout, which
    :func:`_check_legacy` covers)."""
    import torch

    fh.seek(0)
    try:
        reader = torch._C.PyTorchFileReader(fh)
        records = set(reader.get_all_records())
    except RuntimeError:
        return None, set()
    return (reader, records) if "archive_format" in records else (None, set())


def _read_json(reader, record: str, name: str) -> Any:
    try:
        return json.loads(reader.get_record(record).decode("utf-8"))
    except (RuntimeError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{name}: {record} is not readable JSON ({_first_line(exc)})") from None


def _loads_weights_only(data: bytes) -> bool:
    """True when ``data`` loads with ``torch.load(weights_only=True)`` (empty counts as loadable)."""
    import pickle

    import torch

    if not data:
        return True
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, KeyError, IndexError, zipfile.BadZipFile):
        return False
    return True


def _check_legacy(fh: BinaryIO, name: str) -> list[str]:
    """The pre-2.7 layout (members at the zip's root), which torch falls back to."""
    reasons = []
    fh.seek(0)
    with zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            if info.filename in LEGACY_PICKLED and not _loads_weights_only(zf.read(info)):
                reasons.append(f"{info.filename} needs full unpickling (it does not load with weights_only=True)")
            elif info.filename == LEGACY_PROGRAM:
                try:
                    program = json.loads(zf.read(info).decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise ModelLoadError(f"{name}: {LEGACY_PROGRAM} is not readable JSON ({_first_line(exc)})") from None
                reasons += _check_program(program, "the legacy program")
    return reasons


# --------------------------------------------------------------------------------------------
# weights and constants
# --------------------------------------------------------------------------------------------
def _check_payloads(reader, name: str, model: str) -> list[str]:
    reasons = []
    for kind, fmt in (("weight", WEIGHTS_CONFIG), ("constant", CONSTANTS_CONFIG)):
        record = fmt.format(model)
        if not reader.has_record(record):
            continue
        config = _read_json(reader, record, name).get("config") or {}
        folder = record.rsplit("/", 1)[0] + "/"
        for fqn, meta in config.items():
            path_name = str(meta.get("path_name", ""))
            if path_name.startswith("custom_obj_"):
                reasons.append(f"{kind} {fqn!r} is a custom (TorchScript) object that torch unpickles")
            elif path_name.startswith("opaque_obj_"):
                reasons.append(f"{kind} {fqn!r} is an opaque Python object stored as a pickle")
            elif meta.get("use_pickle"):
                reasons.append(f"{kind} {fqn!r} is stored as a pickle (use_pickle), loaded with weights_only=False")
            elif meta.get("tensor_meta") is not None:
                _check_record_size(reader, name, f"{kind} {fqn!r}", folder + path_name, meta["tensor_meta"])
    return reasons


def _ints(values: list, what: str, name: str) -> list[int] | None:
    """``[{"as_int": n}, ...]`` as ints; None when a value is symbolic."""
    out = []
    for v in values or []:
        if not isinstance(v, dict) or "as_int" not in v:
            return None
        n = v["as_int"]
        if type(n) is not int or n < 0:
            raise ModelLoadError(f"{name}: {what} declares an invalid size or stride {n!r}")
        out.append(n)
    return out


def _check_record_size(reader, name: str, what: str, record: str, meta: dict) -> None:
    """The record must hold the bytes the declared shape/strides/offset address (torch allocates
    the declared shape when the record is empty)."""
    import torch
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    if not reader.has_record(record):
        raise ModelLoadError(f"{name}: {what} points to {record}, which the archive does not hold")
    try:
        itemsize = torch._utils._element_size(_SERIALIZE_TO_TORCH_DTYPE[int(meta.get("dtype"))])
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise ModelLoadError(f"{name}: {what} has an unknown dtype {meta.get('dtype')!r}") from None
    sizes = _ints(meta.get("sizes"), what, name)
    strides = _ints(meta.get("strides"), what, name)
    offset = _ints([meta.get("storage_offset") or {"as_int": 0}], what, name)
    if sizes is None or strides is None or offset is None or len(sizes) != len(strides):
        return
    needed = 0 if 0 in sizes else (offset[0] + sum((s - 1) * st for s, st in zip(sizes, strides)) + 1) * itemsize
    held = int(reader.get_record_size(record))
    if needed > held:
        shape = "x".join(map(str, sizes)) or "scalar"
        raise ModelLoadError(f"{name}: {what} declares shape {shape} ({needed:,} bytes) but its record {record} "
                             f"holds {held:,} bytes; the archive is corrupt or crafted")


# --------------------------------------------------------------------------------------------
# the program JSON: expressions, guards, pytree specs
# --------------------------------------------------------------------------------------------
def _walk(obj: Any, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    yield key, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)


def _check_program(program: Any, where: str) -> list[str]:
    reasons = []
    for key, value in _walk(program):
        if key == "expr_str" and isinstance(value, str):
            problem = expression_problem(value)
            if problem:
                reasons.append(f"{where} has a symbolic expression torch would evaluate as Python ({problem})")
        elif key == "guards_code" and isinstance(value, list):
            for guard in value:
                problem = guard_problem(guard)
                if problem:
                    reasons.append(f"{where} has guard code torch would run as Python ({problem})")
        elif key in ("in_spec", "out_spec") and isinstance(value, str):
            problem = treespec_problem(value)
            if problem:
                reasons.append(f"{where} has an input/output spec that {problem}")
    return reasons


def _short(text: Any) -> str:
    text = str(text)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _parse(text: Any) -> ast.Expression | str:
    if not isinstance(text, str) or "\n" in text or "\r" in text:
        return f"{_short(text)} is not one line of text"
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return f"{_short(text)} is not a plain expression"


def _first_disallowed(text: Any, structural: tuple, allowed) -> str | None:
    """None when every node of ``text`` is ``structural`` or passes ``allowed(node)``, else why not."""
    tree = _parse(text)
    if isinstance(tree, str):
        return tree
    for node in ast.walk(tree):
        if not isinstance(node, structural) and not allowed(node):
            return f"{_short(text)} uses {_node_text(node)}"
    return None


def _sympy_node_ok(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool) or isinstance(node.value, str) and bool(SYMBOL.fullmatch(node.value))
    if isinstance(node, ast.Name):
        return node.id in SYMPY_NAMES or bool(SYMBOL.fullmatch(node.id))  # Symbol('s0', ...)
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in SYMPY_NAMES
    return isinstance(node, ast.keyword) and node.arg in SYMBOL_ASSUMPTIONS \
        and isinstance(node.value, ast.Constant) and type(node.value.value) is bool


def _guard_node_ok(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool) or isinstance(node.value, str) and bool(_KEY.fullmatch(node.value))
    if isinstance(node, ast.Name):
        return node.id in ("L", *GUARD_ATTRS, *GUARD_FUNCTIONS)
    if isinstance(node, ast.Attribute):
        return _guard_attribute_ok(node)
    return isinstance(node, ast.Call) and not node.keywords and _guard_call_ok(node.func)


_STRUCTURAL = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Tuple)


def expression_problem(text: Any) -> str | None:
    """None when ``text`` is shape arithmetic sympy may parse safely, else why not."""
    return _first_disallowed(text, (*_STRUCTURAL, *_OPERATORS), _sympy_node_ok)


def guard_problem(text: Any) -> str | None:
    """None when ``text`` is a shape check torch may compile safely, else why not."""
    return _first_disallowed(text, (*_STRUCTURAL, ast.Subscript, *_OPERATORS), _guard_node_ok)


def _guard_attribute_ok(node: ast.Attribute) -> bool:
    if isinstance(node.value, ast.Name) and node.value.id in GUARD_ATTRS:
        return node.attr in GUARD_ATTRS[node.value.id]
    return node.attr in GUARD_METHODS and not isinstance(node.value, ast.Name)


def _guard_call_ok(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in GUARD_FUNCTIONS
    return isinstance(func, ast.Attribute) and _guard_attribute_ok(func)


def _node_text(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except (AttributeError, ValueError, TypeError):
        text = type(node).__name__
    return f"{type(node).__name__.lower()} {_short(text)}"


def treespec_problem(text: str) -> str | None:
    """None when a serialized pytree spec imports nothing, else what it would import or call."""
    try:
        spec = json.loads(text)
    except ValueError:
        return "is not JSON"
    for key, node in _walk(spec):
        if not isinstance(node, dict) or "type" not in node:
            continue
        context = node.get("context")
        if isinstance(context, str):
            try:
                decoded = json.loads(context)
            except ValueError:
                continue  # torch fails on it without importing anything
        elif isinstance(context, dict):  # types with their own context format (defaultdict)
            decoded = context
        else:
            continue
        if any(isinstance(v, dict) and "__enum__" in v for _, v in _walk(decoded)):
            return "imports a module to rebuild an enum key"
        if node["type"] == "collections.defaultdict" and isinstance(decoded, dict):
            module, factory = decoded.get("default_factory_module"), decoded.get("default_factory_name")
            if module != "builtins" or factory not in DEFAULTDICT_FACTORIES:
                return f"imports {module}.{factory} as a defaultdict factory"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)[:300]


__all__ = ["check_exported_archive", "expression_problem", "guard_problem", "treespec_problem"]
