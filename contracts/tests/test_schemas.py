from contracts.export_schemas import SCHEMA_DIR, render_schemas


def test_exported_schemas_are_current():
    expected = render_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == expected, "contracts/schemas is stale: run `make schemas`"
