from provisiond.daemon.main import run

run()
