"""Domain exceptions raised by service cores, and their mapping to gRPC statuses.

Cores raise these and never build status codes themselves; the error interceptor in
`shared.interceptors` turns each one into a `google.rpc.Status` with typed details
(BadRequest field violations, ResourceInfo, RetryInfo)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a core may raise on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.extend(self.details())
        return status


def _pack(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InvalidArgument(DomainError):
    """The request is malformed; `violations` say which fields and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation] | FieldViolation) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [_pack(bad_request)]


def invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


class _ResourceError(DomainError):
    """An error about one named resource; `field` names the request field that named it."""

    def __init__(
        self, resource_type: str, resource_name: str, message: str, field: str | None
    ) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name
        self.field = field

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type,
            resource_name=self.resource_name,
            description=self.message,
        )
        details = [_pack(info)]
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=self.message
            )
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        return details


class NotFound(_ResourceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, resource_name: str, field: str | None = None) -> None:
        message = f"{resource_type} {resource_name!r} not found"
        super().__init__(resource_type, resource_name, message, field)


class AlreadyExists(_ResourceError):
    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, resource_type: str, resource_name: str, field: str | None = None) -> None:
        message = f"{resource_type} {resource_name!r} already exists"
        super().__init__(resource_type, resource_name, message, field)


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation (it may be later)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(DomainError):
    """A bounded resource (a queue, a quota) is full; retry after `retry_after_s`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> list[any_pb2.Any]:
        if self.retry_after_s is None:
            return []
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay))]


class Unavailable(ResourceExhausted):
    """A dependency or the service itself cannot answer now; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(DomainError):
    """Stored data does not match its recorded digest."""

    code = grpc.StatusCode.DATA_LOSS


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(DomainError):
    code = grpc.StatusCode.CANCELLED


class RemoteStatus(DomainError):
    """A failure another process already turned into a `google.rpc.Status`: raised again
    as it came, code, message and details unchanged."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.code = next(
            (code for code in grpc.StatusCode if code.value[0] == status.code),
            grpc.StatusCode.UNKNOWN,
        )
        self._status = status

    def to_status(self) -> status_pb2.Status:
        return self._status
