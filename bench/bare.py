"""The ceiling: a Flask route that reads the body and stores nothing."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/genesys/1/cs/services/start")
def start_service():
    request.get_data()
    return jsonify(service_id=1), 201, {"Location": "/genesys/1/cs/services/1"}
