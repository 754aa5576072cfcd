"""Every public class and function of mtl_keras shows a runnable example.

The examples themselves run as doctests (`--doctest-modules` over
`mtl_keras/`, see pyproject.toml); this test makes sure none is missing and
none is skipped.
"""

import importlib
import inspect
import pkgutil

import mtl_keras


def _modules():
    for info in pkgutil.walk_packages(mtl_keras.__path__, "mtl_keras."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):  # _compat is private
            yield importlib.import_module(info.name)


def _public_objects(module):
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", None) != module.__name__:
            continue  # imported from elsewhere
        if inspect.isclass(value) and issubclass(value, Exception):
            continue  # errors are shown by the examples that raise them
        yield f"{module.__name__}.{name}", value


def test_every_public_class_and_function_has_an_example():
    missing = [
        name
        for module in _modules()
        for name, value in _public_objects(module)
        if ">>>" not in (inspect.getdoc(value) or "")
    ]
    assert not missing, f"no docstring example: {missing}"


def test_no_example_is_skipped():
    skipped = [
        module.__name__
        for module in _modules()
        if "doctest: +SKIP" in inspect.getsource(module)
    ]
    assert not skipped
