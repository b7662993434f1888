"""Helper modules shared by the tests (servers on loopback, polling, seeds); no tests here."""
