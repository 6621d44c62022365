"""Every subcommand of `abstractinator`: one module (or, for `pipeline`, one package) per subcommand; each exposes
`register(subparsers)` and sets `func` on its parser. Commands raise configs.UserError for what the user can fix
and leave the printing to abstractinator/cli.py."""
