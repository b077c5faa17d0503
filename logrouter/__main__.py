from logrouter.cli import main

raise SystemExit(main())
