"""What a table task is: :class:`TableTaskSpec`, its name, body and period, and the check of a
call against its body.

The decorator that makes one, and the registry of those this process has imported, are
:mod:`allot.work.task`; the router (:mod:`allot.work.routing`) and ``allot work send``
(:mod:`allot.work.client`) check a call with :meth:`TableTaskSpec.check_call` before anything
is sent; a run (:mod:`allot.work.run`) calls its body.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from allot.errors import InvalidInput

TableBody = Callable[..., Any]


@dataclass(frozen=True)
class TableTaskSpec:
    """A registered table task: its name, body and period (seconds, or None)."""

    name: str
    body: TableBody
    every: float | None

    def check_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """The table a call names, after checking the call fits the body.

        Raises:
            InvalidInput: no table, extra positional arguments, keyword arguments the body does
                not take, or values that are not JSON.
        """
        if len(args) != 1 or not isinstance(args[0], str):
            raise InvalidInput(
                f"table task {self.name} takes the table name as its one positional argument "
                f"(catalog.database.table), got {list(args)!r}"
            )
        try:
            inspect.signature(self.body).bind(None, **kwargs)
        except TypeError as exc:
            raise InvalidInput(f"table task {self.name}: bad keyword arguments: {exc}") from None
        try:
            json.dumps(dict(kwargs))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"table task {self.name}: keyword arguments must be JSON: {exc}"
            ) from None
        return args[0]
