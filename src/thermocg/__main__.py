from thermocg.cli import main

raise SystemExit(main())
