"""Wire models shared by more than one service (REST bodies and event payloads), pydantic only."""
