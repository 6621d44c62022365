from abstractinator.cli import main

raise SystemExit(main())
