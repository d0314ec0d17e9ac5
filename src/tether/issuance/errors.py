from tether.errors import TetherError


class OAuthError(TetherError):
    """An RFC 6749 error: `error` is the registered code, the message its description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.code = error
        self.status_code = status
