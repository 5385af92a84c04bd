"""Base model settings shared by every contract."""

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema


class Contract(BaseModel):
    """Strict by default: unknown fields are refused so typos surface as 422s."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OpenContract(BaseModel):
    """For data we only pass along (e.g. an applicant's form): unknown fields kept."""

    model_config = ConfigDict(extra="allow")


class PublishedSchema(GenerateJsonSchema):
    """JSON Schema as clients must read it: a contract strips surrounding whitespace before it
    checks a length, so a required string must hold a character that is not whitespace (`\\S`);
    without it the schema would call "\\r" a valid name that the contract refuses."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        json_schema: dict[str, Any] = super().str_schema(schema)
        stripped = schema.get("strip_whitespace", True)  # Contract strips unless a field says not to
        if stripped and json_schema.get("minLength", 0) >= 1 and "pattern" not in json_schema:
            json_schema["pattern"] = r"\S"
        return json_schema
