"""idsync.target: Microsoft Entra ID through Microsoft Graph — delta import and idempotent export."""

from idsync.target.client import GraphClient, user_agent
from idsync.target.delta import ImportResult, TypeImport
from idsync.target.errors import (
    ExportRejected,
    GraphAuthError,
    GraphRequestError,
    GraphUnavailable,
    NotOwned,
    ResyncRequired,
    TargetError,
)
from idsync.target.export import Exporter, ExportReport, OpResult
from idsync.target.graph import GraphTarget
from idsync.target.schema import TargetSchema

__all__ = [
    "ExportRejected",
    "ExportReport",
    "Exporter",
    "GraphAuthError",
    "GraphClient",
    "GraphRequestError",
    "GraphTarget",
    "GraphUnavailable",
    "ImportResult",
    "NotOwned",
    "OpResult",
    "ResyncRequired",
    "TargetError",
    "TargetSchema",
    "TypeImport",
    "user_agent",
]
