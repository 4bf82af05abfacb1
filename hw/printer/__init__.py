"""Receipt printers over python-escpos: receipt layout, printing and real-time status.

Facts and effects only. :func:`~hw.printer.transport.print_receipt` prints one receipt or says
why it did not; :func:`~hw.printer.transport.query_status` reports what the printer says about
itself (DLE EOT). Queueing, retries and alerts are the agent's business. Every call blocks on
the printer: run it off the event loop, and use a printer object from one thread at a time.

python-escpos is imported on first use, with its import side effects kept in check: its
capabilities pickle goes to a fixed cache directory, no temporary directory is left behind
(python-escpos 3.1 makes one on import even when told where the pickle goes), and neither its
import-time ``logging.basicConfig()`` nor its transports' ``logging.info()`` calls configure the
root logger (the transports log to the ``escpos.printer`` logger instead).

- :mod:`hw.printer.receipt`: the :class:`~hw.printer.receipt.Receipt` (a receipt or slip, as the
  agent words it) and its ESC/POS layout;
- :mod:`hw.printer.transport`: the connection, the status query and printing;
- :mod:`hw.printer.library`: python-escpos, imported as told above.

Example (the config is the agent's ``[printer]`` section, ``PrintingConfig.driver_config()``)::

    printer = printer_from_config(config)
    try:
        sent = print_receipt(printer, receipt, width_mm=config.width_mm)
    except PrinterNotReady as refused:
        ...  # refused.status says why: silent, offline, cover open, paper out
    finally:
        printer.close()
"""
