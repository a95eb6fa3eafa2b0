from idsync.cli import main

raise SystemExit(main())
