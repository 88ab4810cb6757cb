from trainctl.cli import main

raise SystemExit(main())
