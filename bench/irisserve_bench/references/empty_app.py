"""An empty FastAPI app: one ``async def`` POST returning a constant (the floor of FastAPI on uvicorn)."""

from fastapi import FastAPI

app = FastAPI()


@app.post("/predict")
async def predict() -> dict[str, str]:
    return {"prediction": "constant"}
