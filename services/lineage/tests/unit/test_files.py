"""Which local files lineage may read to register them (PAI_LINEAGE_FILE_ROOTS)."""

from __future__ import annotations

import pathlib

import pytest

from pai_common.errors import InvalidArgument
from pai_lineage.app.artifacts import Files


async def test_only_files_under_the_roots_are_read_even_through_a_link(tmp_path: pathlib.Path) -> None:
    allowed, secret = tmp_path / "data", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (allowed / "rows.txt").write_text("1 2 3")
    (secret / "key").write_text("s3cr3t")
    (allowed / "link").symlink_to(secret)
    files = Files((allowed.resolve(),))
    facts = await files.complete((allowed / "rows.txt").as_uri(), 0, 0, "", field="uri")
    assert (facts.size_bytes, facts.file_count) == (5, 1) and facts.checksum.startswith("sha256:")
    for outside in (secret / "key", allowed / "link", allowed / ".." / "secret"):
        with pytest.raises(InvalidArgument) as err:
            await files.complete(outside.as_uri(), 0, 0, "", field="uri")
        assert err.value.reason == "INVALID_URI" and "outside" in err.value.message
    # other schemes are registered as given; without roots every local path may be read
    assert (await files.complete("s3://bucket/x", 7, 1, "", field="uri")).size_bytes == 7
    assert (await Files().complete((secret / "key").as_uri(), 0, 0, "", field="uri")).size_bytes == 6


def test_the_roots_come_from_the_setting(tmp_path: pathlib.Path) -> None:
    from pai_common.config import Settings
    from pai_common.testing import service_settings
    from pai_lineage.bootstrap import files

    def settings(**extra: str) -> Settings:
        return service_settings(
            "lineage", tmp_path, ("sqlite+aiosqlite://", ""), "nats://127.0.0.1:1", "", **extra
        )

    assert files(settings()).roots == ()
    both = files(settings(file_roots=f"{tmp_path / 'a'}:{tmp_path / 'b'}:"))
    assert both.roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
