"""What the image holds is enough: from only the directories the Dockerfile copies, migrations apply.

(The services themselves are started from the same layout by test_deploy_metrics_exported.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from shared.roles import ADMIN_SCHEMA
from tests.unit.deploy.deploy_files import SERVICES, image_tree

pytestmark = pytest.mark.integration


def _run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # `python -m` puts the working directory first on sys.path, as in the image (WORKDIR /app).
    return subprocess.run(
        [sys.executable, *args], cwd=app, capture_output=True, text=True, timeout=120, check=False
    )


async def test_migrations_run_from_the_image_layout(database_factory, tmp_path: Path) -> None:
    app = image_tree(tmp_path)
    url = await database_factory(template=None)
    result = _run(app, "-m", "shared.migrate", "--database-url", url)
    assert result.returncode == 0, result.stderr[-3000:]
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            versioned = set(
                (
                    await conn.execute(
                        sa.text(
                            "select table_schema from information_schema.tables where table_name = 'alembic_version'"
                        )
                    )
                ).scalars()
            )
    finally:
        await engine.dispose()
    # Every service's schema, and runtime administration's (services/admin/migrations, #18).
    assert versioned == {*SERVICES, ADMIN_SCHEMA}


def test_the_image_layout_imports_its_own_copy_of_the_code(tmp_path: Path) -> None:
    app = image_tree(tmp_path)
    result = _run(app, "-c", "import services, shared; print(services.__file__); print(shared.__file__)")
    assert result.returncode == 0, result.stderr
    for path in result.stdout.split():
        assert Path(path).is_relative_to(app), f"imported {path}, not the image tree under {app}"
