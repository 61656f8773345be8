from hwkd.cli import main

raise SystemExit(main())
