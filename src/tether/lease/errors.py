from tether.errors import NotFoundError, TetherError


class LeaseError(TetherError):
    code = "lease_error"


class TaskNotFound(NotFoundError):
    code = "task_not_found"


class LeaseNotFound(NotFoundError):
    code = "lease_not_found"
