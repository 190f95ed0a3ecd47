"""Store URLs: every credential masked wherever a URL is shown or recorded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from automl.stores import mask_url

SECRET = "S3cret-PW"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg2://rt:{SECRET}@127.0.0.1:5432/db",
        f"postgresql+psycopg2://rt@127.0.0.1:5432/db?password={SECRET}",
        f"postgresql://rt@h/db?sslmode=require&PASSWORD={SECRET}",
        f"postgresql://rt@h/db?passwd={SECRET}&x=1",
        f"mysql://h/db?pwd={SECRET}",
        f"http://h:5000/?token={SECRET}",
        f"http://h:5000/?Access_Key={SECRET}&secret={SECRET}",
        f"postgresql://h/db?sslpassword={SECRET}",
        f"s3://bucket/x?X-Amz-Credential={SECRET}",
        f"could not connect: postgresql://a:{SECRET}@h/db?key={SECRET} (timeout)",
    ],
)
def test_every_credential_is_masked(url):
    masked = mask_url(url)
    assert SECRET not in masked
    assert "***" in masked


@pytest.mark.parametrize(
    "url",
    ["sqlite:///automl.db", "postgresql://rt@h:5432/db?sslmode=require", "http://h:5000"],
)
def test_urls_without_credentials_are_unchanged(url):
    assert mask_url(url) == url


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_any_password_in_userinfo_or_query_is_masked(secret):
    secret = secret.replace("@", "").replace("/", "").replace("&", "").replace("#", "")
    if not secret.strip() or any(c.isspace() for c in secret) or ";" in secret:
        return
    for url in (f"postgresql://u:{secret}@h/db", f"postgresql://u@h/db?password={secret}"):
        assert f"{secret}@" not in mask_url(url) and f"={secret}" not in mask_url(url)


def test_a_relative_local_store_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    """MLflow keeps one store per URI string: a relative one would stay bound to the folder
    it was first opened in, whatever the working folder later."""
    from automl.stores import absolute_sqlite

    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_sqlite("sqlite:///a/b.db?timeout=5") == f"sqlite:///{tmp_path}/a/b.db?timeout=5"
    assert absolute_sqlite("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_sqlite("http://host:5000") == "http://host:5000"
    assert absolute_sqlite("sqlite:///:memory:") == "sqlite:///:memory:"
