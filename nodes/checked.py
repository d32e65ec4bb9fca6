"""CheckedNode: one check per input rule, run on constants at validation and on linked values at execution.

The newest frontend gives every widget a socket. For a linked input ComfyUI passes None to
`validate_inputs` (the value does not exist yet) and, at execution, hands the node the upstream value
without checking it against the widget's min / max / options. So every DrUM node checks its inputs
twice with the same rules and the same messages: `validate_inputs` (None = linked: skipped) and
`check_inputs` at the top of `execute`. `validate_inputs(**values)` also tells ComfyUI to leave
range and option checks to the node (execution.validate_inputs), so constants and links meet
exactly the same rules. docs/comfyui.md "Widgets fed by links".

CheckedNode is also where a node finds the pack's state: ComfyUI registers the classes the extension
binds to its DrumState (`bound`), and a node's classmethods read it with `cls.state()` (nodes/state.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from comfy_api.latest import io

if TYPE_CHECKING:
    from .state import DrumState


class DrUMInputError(ValueError):
    """An input value (constant or linked) that breaks a node's rule; the message names the node and the input."""


def widget_error(info: dict, values: dict[str, Any], listed_elsewhere: tuple[str, ...] = ()) -> str | None:
    """Why a value breaks its widget's declared min / max / options (`info`: the node's V1 input dict), or None.
    None values (linked, at validation) are skipped; `listed_elsewhere`: combos the node checks with its own rule."""
    for section in ("required", "optional"):
        for name, spec in info.get(section, {}).items():
            value = values.get(name)
            if value is None:
                continue
            io_type, options = spec[0], spec[1] if len(spec) > 1 else {}
            if io_type in ("INT", "FLOAT"):
                if "min" in options and value < options["min"]:
                    return f"{name} = {value} is below its minimum {options['min']}"
                if "max" in options and value > options["max"]:
                    return f"{name} = {value} is above its maximum {options['max']}"
            elif io_type == "COMBO" and name not in listed_elsewhere and value not in options.get("options", []):
                return f"{name} = {value!r} is not one of its options {options.get('options', [])}"
    return None


class CheckedNode(io.ComfyNode):
    """A node whose widgets may be linked. Subclasses put their own rules in `input_error` (skipping None values)
    and call `cls.check_inputs(...)` first thing in `execute` with every input value."""

    LISTED_ELSEWHERE: ClassVar[tuple[str, ...]] = ()  # folder-listing combos checked by `input_error` (e.g. a file that exists)
    _state: ClassVar[DrumState | None] = None  # set only on the bound classes the extension hands to ComfyUI

    @classmethod
    def bound(cls, state: DrumState) -> type[CheckedNode]:
        """This node class for the extension that owns `state`: a subclass (same name, module and schema) whose
        `state()` is `state`. The module's own class stays unbound."""
        attributes = {"_state": state, "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
        return type(cls.__name__, (cls,), attributes)

    @classmethod
    def state(cls) -> DrumState:
        """The pack's state this node class was bound to (RuntimeError for a class ComfyUI did not get from the extension)."""
        if cls._state is None:
            raise RuntimeError(
                f"DrUM: {cls.__qualname__} is not bound to the pack's state: use the classes DrUMExtension.get_node_list returns"
            )
        return cls._state

    @classmethod
    def input_error(cls, values: dict[str, Any]) -> str | None:
        """The node's own rules over `values` (None = linked at validation: skip that value); the reason, or None."""
        return None

    @classmethod
    def error_of(cls, values: dict[str, Any]) -> str | None:
        """The first broken rule, as '<node display name>: <reason>', or None."""
        schema = cls.define_schema()  # not GET_SCHEMA: ComfyUI runs these on a locked clone of the class
        error = cls.input_error(values) or widget_error(schema.get_v1_info(cls).input, values, cls.LISTED_ELSEWHERE)
        return None if error is None else f"{schema.display_name}: {error}"

    @classmethod
    def validate_inputs(cls, **values) -> bool | str:
        return cls.error_of(values) or True

    @classmethod
    def check_inputs(cls, **values) -> None:
        """At execution, linked values included: DrUMInputError with the message validation gives a constant."""
        error = cls.error_of(values)
        if error is not None:
            raise DrUMInputError(error)
