"""Export the JSON Schema of the envelope and every event payload to contracts/schemas/.

Run `python -m contracts.export_schemas`; a test fails when the files are stale.
"""

import json
from pathlib import Path

from contracts import events  # noqa: F401  (registers the event types)
from contracts.envelope import Envelope, registered_events

SCHEMA_DIR = Path(__file__).parent / "schemas"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, for the envelope and each registered event type."""
    out = {"envelope.json": Envelope.model_json_schema()}
    for event_type, model in sorted(registered_events().items()):
        out[f"{event_type}.json"] = model.model_json_schema()
    return {
        name: json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n" for name, schema in out.items()
    }


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for stale in SCHEMA_DIR.glob("*.json"):
        stale.unlink()
    for name, text in render_schemas().items():
        (SCHEMA_DIR / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(render_schemas())} schemas to {SCHEMA_DIR}")


if __name__ == "__main__":
    main()
