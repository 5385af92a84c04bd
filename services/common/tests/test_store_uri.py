"""Where a service's store client connects: the local document server's Unix socket when one is
set, else MONGO_URI."""

from pathlib import Path
from typing import IO

import pymongo.uri_parser
import yaml
from nameko.cli.utils.config import IMPLICIT_ENV_VAR_MATCHER, env_var_constructor

from services.common.mongo import store_uri

ROOT = Path(__file__).resolve().parents[3]


class ConfigLoader(yaml.SafeLoader):
    """nameko's reading of `${VAR:default}`, on a loader of our own: nameko's `load_config` adds it
    to every SafeLoader of the test run (and compose's `${VAR:-default}` then reads wrongly)."""


ConfigLoader.add_constructor("!env_var", env_var_constructor)
ConfigLoader.add_implicit_resolver("!env_var", IMPLICIT_ENV_VAR_MATCHER, None)


def load_config(f: IO[str]) -> dict:
    return yaml.load(f, Loader=ConfigLoader)  # a SafeLoader subclass


URI = "mongodb://127.0.0.1:27017"


def test_mongo_uri_without_a_socket() -> None:
    assert store_uri({"MONGO_URI": URI}) == URI
    assert store_uri({"MONGO_URI": URI, "MONGO_SOCKET": None}) == URI  # `${YIWANG_MONGO_SOCKET:}` unset
    assert store_uri({"MONGO_URI": URI, "MONGO_SOCKET": ""}) == URI


def test_a_socket_path_becomes_a_uri_pymongo_reads_back_as_that_path() -> None:
    path = "/root/.local/state/yiwang/docserver-27017.sock"
    uri = store_uri({"MONGO_URI": URI, "MONGO_SOCKET": path})
    assert pymongo.uri_parser.parse_uri(uri)["nodelist"] == [(path, None)]


def test_config_yml_passes_the_socket_setting_on(monkeypatch) -> None:
    # The path from infra/system.py reaches the services through config.yml's MONGO_SOCKET.
    path = "/tmp/yiwang-test/docserver-27017.sock"
    with (ROOT / "config.yml").open() as f:
        monkeypatch.setenv("YIWANG_MONGO_SOCKET", path)
        settings = load_config(f)
    assert pymongo.uri_parser.parse_uri(store_uri(settings))["nodelist"] == [(path, None)]
    monkeypatch.delenv("YIWANG_MONGO_SOCKET")
    with (ROOT / "config.yml").open() as f:
        assert store_uri(load_config(f)).startswith("mongodb://127.0.0.1:")
