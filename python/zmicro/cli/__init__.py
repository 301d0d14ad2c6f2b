"""The ``zmicro`` command: call services and look them up in the registry.

::

    zmicro call greeter Greeter.Hello '{"name": "Ada"}'
    echo '{"name": "Ada"}' | zmicro call greeter Greeter.Hello
    zmicro call greeter Greeter.Hello '{"name": "Ada"}' --address tcp://127.0.0.1:5555
    zmicro list [--json]                      # services, then topics and their subscribers
    zmicro describe greeter [--json]
    zmicro health greeter [--json]
    zmicro publish order.created '{"id": 1}' [-m k=v] [--wait] [--timeout S]
    zmicro subscribe order.created [--queue billing] [--json]
    zmicro run myapp.services:greeter [--workers 4] [--address tcp://127.0.0.1:*]
    zmicro keygen [--out DIR --name NAME] [--force]
    zmicro trust KEY_OR_FILE [--name NAME] [--role ROLE ...]
    zmicro trust --remove KEY_OR_FILE
    zmicro keys
    zmicro mac list|add|current ID|remove ID

The Python API does the work (:class:`~zmicro.Client`, the registry); this
package turns arguments into calls and results into text, one module per
group of commands: :mod:`.calls` (call, list, describe), :mod:`.events`
(publish, subscribe), :mod:`.keys`
(keygen, trust, keys), :mod:`.mac` (the MAC secrets), :mod:`.lifecycle`
(health, run); what they share is in ``_shared``.

Exit status (``EXIT_*``): 0 success; 1 the call failed with an RPC
error (the service's, or ``UNAVAILABLE`` when no node could be reached) or
the service to describe is not registered, ``health`` found no serving node,
a ``run`` worker failed, or a ``publish``ed event was not acked by every
group in time; 2 usage error (bad option, invalid JSON, a
``run`` target that is not a service); 3 the registry or the transport
could not be used.
"""

from __future__ import annotations

import click

from .. import __version__
from . import calls, events, keys, lifecycle, mac
from ._shared import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_USAGE

__all__ = ["EXIT_ENVIRONMENT", "EXIT_FAILED", "EXIT_USAGE", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zmicro")
def main() -> None:
    """Call zmicro services and look them up in the registry.

    Exit status: 0 success, 1 RPC error or unknown service, 2 usage error,
    3 registry or transport unusable.
    """


# One module per group of commands; the order here is not the order of
# --help (click sorts by name).
for _command in (calls.call, calls.list_, calls.describe,
                 keys.keygen, keys.trust, keys.keys,
                 mac.mac, events.publish, events.subscribe,
                 lifecycle.health_, lifecycle.run_):
    main.add_command(_command)
