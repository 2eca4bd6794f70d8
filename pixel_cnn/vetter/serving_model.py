"""Model code for ``mlflow.pyfunc`` "models from code": no pickled Python in the model.

MLflow copies this file into the model directory and runs it at load time;
``set_model`` names the object that serves predictions.
"""

from mlflow.models import set_model

from pixel_cnn.vetter.pyfunc import PixelCNNPyfunc

set_model(PixelCNNPyfunc())
