"""Marks every array field of Twilio's form-encoded request bodies as `style: form, explode: true`.

Twilio's API takes a repeated key for a list (StatusCallbackEvent=a&StatusCallbackEvent=b); the spec
does not say so, and without it Prism refuses such requests. Usage: twilio-spec-arrays.py IN OUT
"""
import json
import sys

source, target = sys.argv[1], sys.argv[2]
with open(source) as f:
    spec = json.load(f)
for operations in spec["paths"].values():
    for operation in operations.values():
        body = operation.get("requestBody") if isinstance(operation, dict) else None
        if not body:
            continue
        for media in body["content"].values():
            arrays = [name for name, field in media["schema"].get("properties", {}).items()
                      if field.get("type") == "array"]
            if arrays:
                media["encoding"] = {name: {"style": "form", "explode": True} for name in arrays}
with open(target, "w") as f:
    json.dump(spec, f)
