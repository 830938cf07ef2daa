"""The parser stage: RawLog lines from logs.raw become ParsedEvents for logs.parsed.<domain>.

`ParserEngine` is the pure core (header formats in `header`, program parsers loaded from
YAML by `loader`); the bus-facing service lives in `service`.
"""

from opmas.parser.engine import INVALID_PRI, PARSE_ERROR, ParserEngine
from opmas.parser.explain import Explanation
from opmas.parser.loader import (
    SHIPPED_DIR,
    ParserFilesError,
    check_parser_dirs,
    load_parsers,
)

__all__ = [
    "INVALID_PRI",
    "PARSE_ERROR",
    "SHIPPED_DIR",
    "Explanation",
    "ParserEngine",
    "ParserFilesError",
    "check_parser_dirs",
    "load_parsers",
]
