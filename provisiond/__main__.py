from provisiond.daemon import run

run()
