"""The dashboard: the `web` transport, served by the node under /ui.

Built on the same services as the API, admitted by the same rules: it has no logic of its
own. Sign-in takes an API token and leaves the browser only a session cookie.
"""

from tether.web._app import CONTENT_SECURITY_POLICY, create_web
from tether.web._pages import BASE

__all__ = ["BASE", "CONTENT_SECURITY_POLICY", "create_web"]
