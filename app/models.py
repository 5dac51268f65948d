"""Tables of the reference service: users, and an outbox of messages to deliver for each."""

from sqlalchemy import Column, DateTime, ForeignKey, Integer, MetaData, String, Table, func

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, unique=True, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("message", String, nullable=False),
    Column("delivered_at", DateTime, nullable=True),
    Column("created_at", DateTime, server_default=func.now()),
)
