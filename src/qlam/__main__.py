from qlam.cli import main

raise SystemExit(main())
