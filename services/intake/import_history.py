"""``python -m services.intake.import_history FILE [--on-error refuse|skip]``: the history import (#18) as a command.

Same checks and one transaction as ``POST /api/v1/imports``; settings (database, topic, reference
data) from the intake service's environment (``INTAKE__...``). The ``hazard.imported`` events go to
intake's outbox, published by a running intake's relay. Prints the result as JSON; exit status 0
when imported, 1 when the file was refused, 2 when it cannot be read or its header is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from services.intake import history, tables
from services.intake.history_import import OnError, import_history
from services.intake.settings import IntakeSettings
from shared.db import create_engine, create_session_factory
from shared.outbox import Outbox
from shared.reference import load_reference_data


async def run(path: Path, data: bytes, *, on_error: OnError, by: str) -> int:
    settings = IntakeSettings()  # from the environment
    reference = load_reference_data(settings.reference_data_dir)
    engine = create_engine(settings.database, application_name="hazard-intake-import")
    try:
        result = await import_history(
            create_session_factory(engine),
            outbox=Outbox(tables.outbox, default_topic=settings.kafka.lifecycle_topic),
            reference=reference,
            data=data,
            filename=path.name,
            on_error=on_error,
            imported_by=by,
        )
    except (history.WrongColumnsError, history.UnreadableFileError) as exc:
        problems = exc.problems if isinstance(exc, history.WrongColumnsError) else [{"problem": str(exc)}]
        print(json.dumps({"refused": True, "problems": problems}, ensure_ascii=False, indent=1))
        return 2
    finally:
        await engine.dispose()
    print(json.dumps(result.json() | {"refused": result.refused}, ensure_ascii=False, indent=1))
    return 1 if result.refused else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.intake.import_history", description=__doc__)
    parser.add_argument("file", type=Path, help="a CSV (UTF-8) or .xlsx file in the template's columns")
    parser.add_argument("--on-error", choices=("refuse", "skip"), default="refuse")
    parser.add_argument("--by", default="import-command", help="who imports (recorded with each record)")
    args = parser.parse_args(argv)
    on_error: OnError = "skip" if args.on_error == "skip" else "refuse"
    return asyncio.run(run(args.file, args.file.read_bytes(), on_error=on_error, by=args.by))


if __name__ == "__main__":
    sys.exit(main())
