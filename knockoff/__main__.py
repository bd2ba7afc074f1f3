from knockoff.cli import main

raise SystemExit(main())
