"""Every public module, function, class and method of torchntk says what it does.

"Public" is decided by names alone:

- a module is public when no component of its dotted path starts with "_" (torchntk.engine.base
  is public, torchntk._inputs is not);
- in a public module, every function or class *defined there* (``obj.__module__`` is the
  module) whose name does not start with "_";
- in such a class, every function, property, classmethod or staticmethod defined in its own
  body whose name does not start with "_". A method counts as documented when Python finds a
  docstring for it on a base class (``inspect.getdoc``), so a protocol method is documented
  once, on the class that defines the protocol (e.g. `torchntk.engine.base.Layer`).

A class needs a docstring of its own: the text that dataclasses and NamedTuple generate from
the fields ("Name(a, b)") does not say what the class is for, and neither does a base class's.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
import sys
from types import ModuleType

import torchntk

# Modules that need an optional extra (pyproject's [project.optional-dependencies]) cannot be
# imported where that extra is absent; they are left out there, and only for a missing module of
# this list. Any other import error fails the test.
OPTIONAL_DEPENDENCIES = {"sklearn", "matplotlib", "zarr", "dask", "distributed", "mlxtend", "gpytorch"}

_METHOD_KINDS = (property, classmethod, staticmethod, functools.cached_property)


def _private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def public_modules() -> list[ModuleType]:
    """torchntk and every public submodule that imports here."""
    modules = [torchntk]
    for info in pkgutil.walk_packages(torchntk.__path__, "torchntk."):
        if _private(info.name):
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in OPTIONAL_DEPENDENCIES:
                raise
    return modules


def _generated_doc(cls: type) -> str | None:
    """The docstring dataclasses or NamedTuple would have generated for ``cls``, if it is one."""
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return f"{cls.__name__}({', '.join(cls._fields)})"
    if dataclasses.is_dataclass(cls):
        try:
            return cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            return None
    return None


def _has_own_doc(cls: type) -> bool:
    doc = vars(cls).get("__doc__")
    return bool(doc and doc.strip()) and doc != _generated_doc(cls)


def undocumented(module: ModuleType) -> list[str]:
    """The dotted names of ``module``'s public functions, classes and methods without a docstring."""
    missing = []
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # imported from elsewhere: checked where it is defined
        where = f"{module.__name__}.{name}"
        if inspect.isfunction(obj):
            if not inspect.getdoc(obj):
                missing.append(where)
            continue
        if not _has_own_doc(obj):
            missing.append(where)
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, _METHOD_KINDS)):
                continue
            if not inspect.getdoc(getattr(obj, attr)):
                missing.append(f"{where}.{attr}")
    return missing


def test_every_public_module_says_what_it_holds():
    missing = [m.__name__ for m in public_modules() if not (m.__doc__ or "").strip()]
    assert not missing, "public modules without a module docstring:\n  " + "\n  ".join(missing)


def test_every_public_function_class_and_method_says_what_it_does():
    missing = [name for module in public_modules() for name in undocumented(module)]
    assert not missing, (f"{len(missing)} public names without a docstring (document them, Google style, with "
                         "the formula or convention and the shapes; or make them private with a leading "
                         "underscore if nothing outside their module uses them):\n  " + "\n  ".join(missing))


_SAMPLE = '''
"""A module with one of each omission, and names the rules must accept."""
import dataclasses
from typing import NamedTuple
from os.path import join          # defined elsewhere: not this module's to document


def bare(x):
    return x


def _helper():
    pass


class Bare:
    def method(self):
        pass

    @property
    def value(self):
        return 1

    def _private(self):
        pass


@dataclasses.dataclass
class Fields:          # only the docstring dataclasses generate, "Fields(a: int)"
    a: int


class Pair(NamedTuple):
    first: int
    second: int


class Base:
    """A protocol."""

    def run(self):
        """Documented once, on the base."""


class Child(Base):
    """A child, whose run inherits the base's docstring."""

    def run(self):
        pass

    @staticmethod
    def make():
        pass
'''


def test_the_check_sees_what_it_must(monkeypatch):
    # The walk must reach the subpackages, and the rules must catch each kind of omission, or the
    # tests above would pass vacuously.
    names = {m.__name__ for m in public_modules()}
    assert {"torchntk.engine.base", "torchntk.empirical.blocks", "torchntk.dynamics.limit"} <= names
    assert "torchntk._inputs" not in names

    # A real module (in sys.modules) so that inspect.getdoc finds base classes as it does in the package.
    name = "torchntk_docstring_sample"
    sample = ModuleType(name)
    monkeypatch.setitem(sys.modules, name, sample)
    exec(compile(_SAMPLE, name, "exec"), vars(sample))
    assert sorted(undocumented(sample)) == [f"{name}.{n}" for n in
                                            ("Bare", "Bare.method", "Bare.value", "Child.make", "Fields", "Pair",
                                             "bare")]
