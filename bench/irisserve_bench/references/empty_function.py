"""An empty functions-framework function returning a constant (the floor of the serverless stack)."""

import functions_framework


@functions_framework.http
def predict(request: object) -> tuple[bytes, int, dict[str, str]]:
    return b'{"prediction":"constant"}', 200, {"Content-Type": "application/json"}
