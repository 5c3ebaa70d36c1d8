"""allot's SQL layer: SQLAlchemy 2.x models, the engine factory and the views."""

from models.base import Base, utcnow
from models.engine import make_engine, session_factory
from models.schema import Bucket, Node, Plan, PlanMove, TableIdentifier
from models.views import table_assignment

__all__ = [
    "Base",
    "Bucket",
    "Node",
    "Plan",
    "PlanMove",
    "TableIdentifier",
    "make_engine",
    "session_factory",
    "table_assignment",
    "utcnow",
]
